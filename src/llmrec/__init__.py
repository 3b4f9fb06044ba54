"""llmrec: LLM-based generative sequential recommendation."""

__version__ = "0.1.0"
