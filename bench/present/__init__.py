"""The present layer: the `tokbench` command (parse the options, call one function below, print),
its tables, plots and exports. Imports every layer below."""
