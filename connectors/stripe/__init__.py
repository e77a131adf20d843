"""Stripe: the gateway the invoicing shell calls."""
