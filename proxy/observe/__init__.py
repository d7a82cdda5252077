"""How the proxy is seen from outside: its metrics, its logs, and what build it is."""
