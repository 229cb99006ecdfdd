"""Pure Block Kit builders: plain data in, blocks or view dicts out, no clients or clocks."""
