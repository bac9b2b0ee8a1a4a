"""Model zoo: the registry (``sciml_bench.models.registry``) and the families that fill it.

``register_model``, ``create_model``, ``list_models`` and ``get_model_spec`` are the zoo's face;
importing this package registers every family's entries.
"""
from sciml_bench.models.registry import (TASKS, WORKLOAD_KNOBS, Batch, ModelSpec, create_model, cross_entropy,  # noqa: F401
                                         default_param_count, forward, get_model_spec, list_models, mse,
                                         param_count, register_model, to_device)

from sciml_bench.models import (cnn, deeponet, densenet, fno, mlp, pinn, resnet, rnn,  # noqa: F401, E402
                                transformer, unet)  # isort: skip  (importing registers the entries)
