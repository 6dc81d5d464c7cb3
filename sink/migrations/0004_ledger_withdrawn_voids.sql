-- A void that another void of the same sale replaced (one with a smaller
-- outlet_seq that arrived later: SPEC rules 1 and 2, a sale is voided once, by
-- its first void in seq order) has its rows' effect set to 'ignored'. The sink
-- may change that one column and nothing else: the ledger stays append-only
-- for what happened, and only says which void counted.
GRANT UPDATE (effect) ON ledger TO retail_sink;
