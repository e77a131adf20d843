"""Stripe: the port the invoicing shell calls (`port`), the real API (`gateway`) and the
in-process Stripe of the demo and unit tests (`memory`)."""
