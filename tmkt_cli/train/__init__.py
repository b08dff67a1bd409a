"""Training: the one loop (engine.py), what a step computes for each method (tasks.py), the
memory a setting needs before anything is allocated (memory.py), process-level concerns such as
seeding, devices, mixed precision and signals (runtime.py), and the progress display
(progress.py)."""
