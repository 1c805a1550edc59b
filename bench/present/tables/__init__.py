"""Every table tokbench prints, as rich tables, one module per thing shown: runs, the catalog
(ops, models), comparisons, estimates, simulations, fleets and published figures. The only
modules that know how things look; the layers below return data."""
