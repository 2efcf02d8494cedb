"""`bench export`: a cell's adapter or merged model, with a Hugging Face model card."""
