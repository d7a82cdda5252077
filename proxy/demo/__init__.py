"""`strangler demo`: a sample monolith and a sample extracted service to put behind the proxy."""
