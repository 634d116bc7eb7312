"""Repository tools: code generation, the local stack launcher."""
