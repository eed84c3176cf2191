"""Datasets: MNIST-rot, rotated IDX benchmarks, the embedded sample, CIFAR."""
