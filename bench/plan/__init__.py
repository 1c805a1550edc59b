"""The plan layer: models, step times (measured, interpolated or modelled), throughput, the
serving simulator, capacity, validation against published figures, comparison of result files.
Returns data; never imports rich, torch or Triton, and never names an op: it reads the ops'
contract (bench.measure.ops.base.Op). Imports the measure and record layers."""
