"""uniaudio: few-shot audio tasks on frozen LLMs through an LLM-vocabulary audio codec."""

__version__ = "0.1.0"
