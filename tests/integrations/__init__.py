"""momenta where people train (issue 16), each compared with torch.optim in the same setup.

* ``test_groups`` — param groups from rules (:mod:`momenta.integrations.groups`);
* ``test_names`` — optimizers by name (:func:`momenta.registry.resolve`, ``create``);
* ``test_backward`` — the optimizer step inside backward (:mod:`momenta.integrations.backward`);
* ``test_transformers`` — Hugging Face's Trainer (skipped without transformers);
* ``test_lightning`` — PyTorch Lightning and LightningCLI (skipped without pytorch_lightning).

Models are tiny and runs a few steps long: the whole directory takes well under a minute.
"""
