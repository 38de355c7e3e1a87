"""Ray actors: thin shells that put r1ci pieces on a node and give them an address."""
