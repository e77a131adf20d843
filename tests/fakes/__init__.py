"""HTTP wire fakes of the outside services (GitHub, Azure DevOps, Stripe, Slack): the
contract tests of the real connectors, and the load of the benchmarks. Not shipped:
`kanvoice demo` uses the in-memory adapters in `connectors/`."""
