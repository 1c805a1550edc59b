"""The `tokbench` commands, grouped by what they work on; bench.present.cli registers them."""
