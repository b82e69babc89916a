"""Footfall analytics from aggregate counts (``docs/analytics.md``).

* :mod:`server.analytics.queries`: the reads (one place; through :mod:`server.history`, rollups first);
* :mod:`server.analytics.maths`: the formulas, pure (capture rate, Little's law, lagged correlation);
* :mod:`server.analytics.figures`: counts per bucket into the cells each endpoint publishes;
* :mod:`server.analytics.privacy`: the k rule every published cell goes through;
* :mod:`server.analytics.models`: the response shapes.
"""
