-- A test query: the rows it returns are the failures (GX UnexpectedRowsExpectation).
-- No order is negative or has a blank customer: the billing export rejects both.
SELECT id, customer, amount
FROM public.orders
WHERE amount < 0 OR btrim(customer) = ''
