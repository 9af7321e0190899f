"""Data: the multimodal RecBole dataset, converters, the bundled default and the test bed."""
from recbole_invrl.data.dataset import FeatureFileError, MultimodalDataset
from recbole_invrl.data.utils import MissingDatasetError, create_dataset, data_preparation

__all__ = [
    "FeatureFileError",
    "MissingDatasetError",
    "MultimodalDataset",
    "create_dataset",
    "data_preparation",
]
