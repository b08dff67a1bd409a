"""Readers of the event formats the recorded datasets ship in, one module per format family.

Every reader takes a path or the file's bytes (an archive member read in memory) and returns
``(events, sensor_size)``: a structured array with :data:`~tmkt_cli.data.sources.EVENT_DTYPE`
in file order and the sensor size as ``(height, width)``. Polarity 1 is an ON event
(brightness went up) in every format. Pure numpy, no per-event Python loop. A file a user
points tmkt at can be damaged; every such problem is a :class:`~tmkt_cli.errors.TmktError`
whose one line names the file.

- :mod:`.atis`: ATIS ``.bin`` (N-MNIST, N-Caltech101).
- :mod:`.aedat2`: AEDAT 2.0, DVS128 (the original CIFAR10-DVS release).
- :mod:`.aedat4`: AEDAT 4.0, DV (N-Omniglot), LZ4 through the ``lz4`` package, ZSTD through
  ``zstandard``.
- :mod:`.mat`: CEP-DVS ``.mat`` (MATLAB v5 or v7.3/HDF5).
- :mod:`.npy`: DVS-Gesture as tonic stores it.

The writers (for tests and benchmarks) live outside the package, in
``tests/support/event_writers.py``.
"""

from tmkt_cli.data.formats.aedat2 import read_aedat2
from tmkt_cli.data.formats.aedat4 import lz4_frame_decompress, read_aedat4
from tmkt_cli.data.formats.atis import read_atis_bin
from tmkt_cli.data.formats.common import EventSource, infer_sensor_size, make_events
from tmkt_cli.data.formats.mat import read_cep_mat
from tmkt_cli.data.formats.npy import read_dvsgesture_npy

__all__ = ["EventSource", "infer_sensor_size", "lz4_frame_decompress", "make_events",
           "read_aedat2", "read_aedat4", "read_atis_bin", "read_cep_mat", "read_dvsgesture_npy"]
