"""The engine's processes: each a thin ``main()`` around a core that is testable alone."""
