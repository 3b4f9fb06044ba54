"""The LLM recommender: loading the LM (``loading``), LoRA (``lora``), ``ItemLM`` (``model``), the trainer
(``config``, ``build``, ``examples``, ``optim``, ``checkpoint``, ``rundir``, ``loop``) and inference
(``recommender``)."""

import logging

# peft's LoRA dispatch imports bitsandbytes, which on CPUs with AVX512-BF16 tries to fetch an optional 4-bit kernel
# from a model hub and logs a warning when it may not. llmrec fetches nothing from a hub and runs no 4-bit kernel on
# a CPU (QLoRA needs CUDA), so that one logger is kept to errors.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
