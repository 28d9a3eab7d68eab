"""kdlite: distil long chain-of-thought reasoning from a frozen Qwen3 teacher into a base student."""

__version__ = "0.1.0"
