"""``modelcast dashboard``: the fleet, releases, rollouts and health in a browser, live, and the
fleet's figures for Prometheus (``/metrics``). docs/DASHBOARD.md is the operator's guide.

The modules, each with one job:

* ``service``: the configuration and the wiring (``Dashboard``);
* ``source`` and ``queries``: one read of the coordinator's database (read-only);
* ``snapshot``: the thread that reads it once per interval, and the snapshot pages are served
  from;
* ``broker_watch``: the broker's reachability and the chunk bytes published;
* ``access``: the token, its cookie, CSRF tokens, the Host check;
* ``web``: requests and responses, the HTTP server; ``app``: the routes;
* ``markup`` (escaping by default), ``layout``, ``charts`` (inline SVG) and one module per page:
  ``fleet_page`` (with ``fleet_view``, its pure logic), ``device_page``, ``releases_page``,
  ``rollouts_page`` (with ``gates``), ``health_page``;
* ``api`` (``/api``) and ``exposition`` (``/metrics``).
"""

from .service import Dashboard, DashboardConfig, load_token

__all__ = ["Dashboard", "DashboardConfig", "load_token"]
