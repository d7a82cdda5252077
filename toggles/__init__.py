"""Feature toggles that decide, per request, whether a user goes to the new service."""
