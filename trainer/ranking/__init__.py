"""The ranking stage: the NCF family (He et al. 2017) with the YouTube ranking features (Covington et al. 2016).

    features.py           the feature space and the in-graph YouTube ranking features
    retrieval_feature.py  the candidate generator's score as a feature; its top-K for two-stage tests
    models.py             ItemPop, MF, GMF, MLP, NeuMF (and the full model) on one interface
    pretrain.py           NeuMF initialised from trained GMF and MLP weights
    loss.py               watch-time weights and the weighted logistic loss
    rows.py               training rows from examples in memory or in shards: negatives, labels, weights
    protocol.py           the temporal and the NCF (leave-last-out) evaluation data
    train.py              `fit` with the shared callbacks, `train_ranking`, `refit_ranking`, `score`
    evaluate.py           sampled (NCF) metrics, full ranking, AUC, weighted per-user loss, the table
    two_stage.py          retrieval top-K re-ranked by this model, against retrieval alone
    signature.py          the serving function shared by the export and in-memory scoring
    export.py             the `ranking` SavedModel in the TF Serving layout
"""
