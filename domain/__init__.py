"""Pure domain rules of SPEC.md: ``(state, event) -> (new state, effects)``, no I/O."""
