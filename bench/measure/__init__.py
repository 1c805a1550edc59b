"""The measure layer: the ops (one module each, in ops/), the suites of cases, the runner that
checks and times them, the timers, the device and its ceilings, several ranks under torchrun, and
the decoder-layer check. torch and Triton are imported here only inside what measures, so that
planning can read the ops' descriptions without them. Imports only the record layer."""
