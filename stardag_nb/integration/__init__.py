"""Running builds on other engines. Each integration is its own module, imported on use
(its library is an optional extra): :mod:`stardag_nb.integration.dask`."""
