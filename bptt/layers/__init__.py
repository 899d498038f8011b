"""Layer 2: objects that own parameters, gradients and caches, and check their inputs."""
from .base import Layer
from .dense import Dense, MLP
from .dropout import Dropout
from .embedding import Embedding, EmbeddingBag
from .losses import (BCEWithLogitsLoss, CrossEntropyLoss, MSELoss, bce_with_logits, mse_loss,
                     softmax_cross_entropy)
from .recurrent import GRU, LSTM, RNN

__all__ = ["Layer", "Dense", "MLP", "Dropout", "Embedding", "EmbeddingBag", "RNN", "LSTM", "GRU", "MSELoss", "CrossEntropyLoss", "BCEWithLogitsLoss",
           "mse_loss", "softmax_cross_entropy", "bce_with_logits"]
