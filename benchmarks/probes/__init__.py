"""Released-size probes, each a command of its own: checkpoints in the released layouts (``checkpoints``), the
bounded-memory export of one under ``/usr/bin/time -v`` (``export``), the runtime against torch from a released
checkpoint (``parity``), and T2V-Turbo from official-layout files against the official pipeline, with the official
code on the path (``turbo_official``)."""
