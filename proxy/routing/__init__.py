"""Pure decisions: which route takes a request, and which side serves it."""
