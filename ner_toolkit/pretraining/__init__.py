"""ALBERT pretraining on raw text: SentencePiece vocabularies (``vocab``), MLM with n-gram masking and SOP
pairs (``data``), AlbertForPreTraining (``model``) and the loop (``trainer``); ``ner-pretrain`` runs them."""
