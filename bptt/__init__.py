"""bptt: neural networks with hand-written forward and backward passes as Numba loops.

Layers of the code, each importing only from those below it:
1. ``bptt.kernels``: ``@njit`` loops on arrays (``bptt.reference``: their readable twins in plain
   NumPy, the same names and signatures, run instead with ``BPTT_KERNELS=reference``);
2. ``bptt.layers``: objects owning parameters, gradients and caches;
3. models and training;
4. the CLI (``cli.py``), which holds no math.

Importing ``bptt`` is cheap: each name below is imported from its module on first use (PEP 562), so
that ``bptt --help`` and the CLI's shared helpers do not load Numba and every kernel.
"""
import importlib

__version__ = "0.1.0"

_EXPORTS = {
    'get_threads': 'jit',
    'set_threads': 'jit',
    'BCEWithLogitsLoss': 'layers',
    'CrossEntropyLoss': 'layers',
    'Dense': 'layers',
    'MLP': 'layers',
    'Dropout': 'layers',
    'MSELoss': 'layers',
    'bce_with_logits': 'layers',
    'mse_loss': 'layers',
    'softmax_cross_entropy': 'layers',
    'GRU': 'layers',
    'LSTM': 'layers',
    'RNN': 'layers',
    'Embedding': 'layers',
    'EmbeddingBag': 'layers',
    'gradcheck': 'finitediff',
    'Forecaster': 'forecast',
    'ForecastConfig': 'forecast',
    'ForecastTrainer': 'forecast',
    'demo_seasonal': 'forecast',
    'detect_season': 'forecast',
    'predict_forecast': 'forecast',
    'read_series_csv': 'forecast',
    'CharTokenizer': 'data',
    'DataError': 'data',
    'StreamBatcher': 'data',
    'WordTokenizer': 'data',
    'SubwordTokenizer': 'data',
    'builtin_corpus': 'data',
    'fit_tokenizer': 'data',
    'oov_bucket': 'data',
    'load_corpus': 'data',
    'read_text_files': 'data',
    'split_train_val': 'data',
    'tokenizer_from_dict': 'data',
    'SGD': 'optim',
    'Adagrad': 'optim',
    'Adam': 'optim',
    'AdamW': 'optim',
    'RMSprop': 'optim',
    'clip_grad_norm': 'optim',
    'clip_grad_value': 'optim',
    'make_optimizer': 'optim',
    'make_schedule': 'optim',
    'CheckpointError': 'checkpoint',
    'load_checkpoint': 'checkpoint',
    'save_checkpoint': 'checkpoint',
    'LanguageModel': 'model',
    'LMConfig': 'model',
    'Trainer': 'train',
    'TrainConfig': 'train',
    'TrainingError': 'train',
    'evaluate': 'train',
    'load_model': 'train',
    'SweepError': 'sweep',
    'SweepSpec': 'sweep',
    'make_trials': 'sweep',
    'SupervisedConfig': 'supervised',
    'SupervisedTrainer': 'supervised',
    'TabularMLP': 'tabular',
    'read_csv': 'tabular',
    'SequenceModel': 'sequence',
    'adding_problem': 'demos',
    'spirals': 'demos',
    'cosine_top_k': 'generate',
    'embed_texts': 'generate',
    'sample': 'generate',
    'BM25Index': 'lexical',
    'TfidfIndex': 'lexical',
    'InfoNCELoss': 'layers.contrastive',
    'Encoder': 'contrastive',
    'EncoderConfig': 'contrastive',
    'ContrastiveConfig': 'contrastive',
    'ContrastiveTrainer': 'contrastive',
    'load_embedder': 'contrastive',
    'Collection': 'collection',
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'bptt' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{mod}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
