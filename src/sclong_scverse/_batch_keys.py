"""Keys of the mini-batches that a pretraining corpus yields and the pretraining plan reads.

Kept apart (no imports) so that ``data`` (reader processes) and ``module`` share them without
importing each other.
"""

#: the values, scvi-tools' ``REGISTRY_KEYS.X_KEY``
X_KEY = "X"
#: masked-expression masks drawn by the corpus: positions chosen, positions replaced
CHOSEN_KEY = "sclong_chosen"
REPLACED_KEY = "sclong_replaced"
#: a batch's place in the corpus order: (epoch, batch index of the rank)
POSITION_KEY = "sclong_corpus_position"
