"""The layers: linear ePDO conv, Neural ePDO, 1x1 intertwiners, norms, pooling."""
