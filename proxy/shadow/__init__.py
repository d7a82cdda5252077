"""The parallel run: the other side's answer, compared with the served one, and recorded; and replay."""
