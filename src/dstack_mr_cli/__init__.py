"""Command-line interface of dstack-mr (``dstack-mr measure``, ``diagnose``, ``example``)."""
