"""Analysis maths behind ``tmkt eval``, ``tmkt cam`` and ``tmkt report``.

- :mod:`heads`: which head of a two-head SNN predicts (``model.test_head``);
- :mod:`stats`: paired differences with 95% intervals, over seeds or test recordings;
- :mod:`metrics`: top-k, per-class accuracy, confusion, accuracy against time steps, seed
  statistics (pure numpy);
- :mod:`energy`: firing rates, synaptic operations, MACs and the energy estimate (hooks that
  count, plus pure counting functions);
- :mod:`cam`: Grad-CAM over time and the spike activation map (SAM);
- :mod:`landscape`: loss along filter-normalised random directions (Li et al. 2018);
- :mod:`style`: the one style of every figure (a colour per method, a marker per heads
  layout, sizes readable in a page column, n in every legend); no matplotlib at import;
- :mod:`plotting`: the figures, drawn with matplotlib's Agg canvas and written atomically.

:mod:`metrics` needs only numpy, :mod:`style` nothing; the other modules import torch or
matplotlib, so import them inside the functions that use them (``tmkt --help`` stays fast).
"""
