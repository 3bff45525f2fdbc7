"""Weight-level learning: training datasets from the store and their exports
(:mod:`minetune.train.datasets`), and hosted fine-tuning jobs (:mod:`minetune.train.hosted`).

Local LoRA training is the default path for weight-level learning. OpenAI closes fine-tuning to new
jobs on 6 January 2027; hosted jobs go to any OpenAI-compatible fine-tuning API
(``MINETUNE_FINETUNE_BASE_URL``).

Nothing heavy is imported here: submodules load torch or httpx only when used.
"""
