"""Pure billing logic: domain types, rules and the planner. No I/O, no clock."""
