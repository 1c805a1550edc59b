"""The record layer: what a measurement is once it is made. The result file (its schema, writer
and loader), the GPU spec table and the units everything is shown in. Standard library only: no
torch, no Triton, nothing from the layers above."""
