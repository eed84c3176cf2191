"""epdo.zoo: groups, stencils, equivariant bases, layers, specs, the builder."""
