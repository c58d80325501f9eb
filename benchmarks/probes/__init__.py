"""Released-size probes, each a command of its own: checkpoints in the released layouts (``checkpoints``), the
bounded-memory export of one under ``/usr/bin/time -v`` (``export``), and the runtime against torch from a released
checkpoint (``parity``)."""
