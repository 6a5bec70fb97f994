module example.com/prack-go-worker

go 1.19
