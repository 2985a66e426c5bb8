# Streams three transactions to kopek and prints one verdict per transaction.
# Stubs: python -m grpc_tools.protoc -I proto/contracts --python_out=examples/python \
#        --grpc_python_out=examples/python transaction.proto
import os
import uuid

import grpc
import transaction_pb2
import transaction_pb2_grpc

channel = grpc.insecure_channel(os.environ.get("KOPEK_GRPC_ADDR", "127.0.0.1:50051"))
stub = transaction_pb2_grpc.TransactionServiceStub(channel)
run = uuid.uuid4().hex[:8]
transactions = [
    transaction_pb2.Transaction(transactionId=f"{run}-1", userId="alice", category="topup",
                                amount=100.0, currency="USD", timestamp="2024-05-01T09:00:00Z"),
    transaction_pb2.Transaction(transactionId=f"{run}-2", userId="alice", category="Food",
                                amount=19.99, currency="USD", timestamp="2024-05-01T12:30:00Z"),
    transaction_pb2.Transaction(transactionId=f"{run}-3", userId="alice", category="Transport",
                                amount=500.0, currency="USD"),
]
for response in stub.StreamTransactions(iter(transactions)):
    print(response.transactionId, response.status, response.message)
