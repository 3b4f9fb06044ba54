"""The LLM recommender: loading the LM (``loading``), LoRA (``lora``), ``ItemLM`` (``model``), the trainer
(``config``, ``build``, ``examples``, ``optim``, ``checkpoint``, ``rundir``, ``loop``) and inference
(``recommender``)."""
