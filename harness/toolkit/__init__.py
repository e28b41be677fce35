"""A toolkit for model authors: pretrained backbones, their weights, augmentation."""
