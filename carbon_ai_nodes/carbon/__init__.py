"""CO2 estimation: emission physics, the learned residual and its inference backends (pure), training
(``training/``), the shipped model (``models/``) and, in ``ros/``, the carbon_inference node."""
