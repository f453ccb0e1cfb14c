"""`tmv serve` (tinymvlm.serve): the HTTP app with the search page and the JSON API, what it answers
independent of HTTP, the Host guard and the thumbnail cache, plus the HTML contact sheet of
`tmv search --html`. Imports tinymvlm.index and the library below it."""
