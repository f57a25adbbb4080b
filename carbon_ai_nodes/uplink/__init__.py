"""Compact summaries upstream: the summary window and codec, the durable queue and the MQTT link (pure)
and, in ``ros/``, the uplink_bridge node."""
