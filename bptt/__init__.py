"""bptt: neural networks with hand-written forward and backward passes as Numba loops.

Layers of the code, each importing only from those below it:
1. ``bptt.kernels``: ``@njit`` loops on arrays;
2. ``bptt.layers``: objects owning parameters, gradients and caches;
3. models and training;
4. the CLI (``cli.py``), which holds no math.
"""
from .jit import get_threads, set_threads
from .layers import (BCEWithLogitsLoss, CrossEntropyLoss, Dense, MLP, MSELoss, bce_with_logits,
                     mse_loss, softmax_cross_entropy)
from .layers import GRU, LSTM, RNN, Embedding
from .gradcheck import gradcheck
from .data import (CharTokenizer, DataError, StreamBatcher, WordTokenizer, builtin_corpus,
                   fit_tokenizer, load_corpus, read_text_files, split_train_val, tokenizer_from_dict)
from .optim import (SGD, Adagrad, Adam, AdamW, RMSprop, clip_grad_norm, clip_grad_value,
                    make_optimizer, make_schedule)
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .model import LanguageModel, LMConfig
from .train import Trainer, TrainConfig, TrainingError, evaluate, load_model
from .generate import cosine_top_k, embed_texts, sample

__version__ = "0.1.0"
