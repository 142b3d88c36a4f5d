"""``modelcast simulate``: thousands of virtual devices on one machine (docs/SCALE.md).

A real edge is a process of about 80 MB; a virtual device is a few objects in a worker
process that runs thousands of them. Each has its own MQTT session and behaves like an edge on
the wire, through the same protocol state machines; it runs no model.

The modules, one job each:

- ``mux``: one event loop (epoll) for many paho clients, with timers;
- ``link``: one device's MQTT connection on it: client id, will, persistent session, paced
  connects and reconnects with backoff, failed connects by reason;
- ``device``: one virtual device: dispatch, trust updates, commands, activation;
  ``follower`` (the signed index and manifests, the edge's target choice), ``download``
  (``protocol.DownloadSession`` on the wire), ``reporting`` (state, status, events, samples),
  ``sinks`` (where verified chunks go: hashed in memory, or the edge's part files);
  ``verified`` (a process's chunks verified once, compared with rather than hashed again);
- ``spec``: who a device is (``DeviceProfile``) and what it holds (``Memory``);
- ``worker``: one process's devices and loop; ``runner``: the parent (``SimulatedFleet``),
  which starts the workers and sums their ``report``s; ``config``: the settings and the split;
  ``fdlimit``: the descriptors a process may hold.

Nothing is imported here: building the command line loads none of it.
"""
