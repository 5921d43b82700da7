"""Server-rendered pages over the same services as the JSON API: the customer's billing page,
the pricing table and the operator console, on one layout, stylesheet and CSRF scheme."""
